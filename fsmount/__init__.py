"""fsmount: mount a chunked-transfer file store as an ordinary directory."""

__version__ = "0.1.0"
