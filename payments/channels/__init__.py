"""Payment channels behind one interface: see ``payments.channels.base``."""
