"""Bill download and parsing, matching against our ledger, repair and reports."""
