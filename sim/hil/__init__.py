"""Hardware-in-the-loop pieces: virtual devices (OCPP chargers with a car, meters, a broker) that run
against the real daemon over real sockets. The virtual chargers are in :mod:`sim.hil.virtual_charger`."""
