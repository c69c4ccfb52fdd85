"""Home batteries beside the cars: how the controller reads and commands a stationary battery.

``control`` runs each controllable battery's commands (one task per battery, newest command wins,
release on stop) through ``mqtt_control`` (setpoints on a topic, with keep-alive) or
``modbus_control`` (SunSpec over Modbus TCP: readings polled into the site, setpoints written with
verify and the inverter's revert timeout). ``sunspec_models`` holds the SunSpec register maps and
scale-factor arithmetic (pure); ``sunspec`` is the Modbus TCP client for SunSpec basic storage
control (model 124).
"""
