"""Outgoing HTTP to o2c's clients: the TMF event hub dispatcher."""
