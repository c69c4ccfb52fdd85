"""v2x-controller: home controller for bidirectional EV charging."""

__version__ = "0.1.0"
