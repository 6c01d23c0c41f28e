"""Meter, PLC and platform stand-ins that speak the real wire protocols."""
