"""Parsers of the channels' daily bills, each reading its own format by header name."""
