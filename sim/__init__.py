"""Closed-loop simulation of a home with the controller's real planning code."""
