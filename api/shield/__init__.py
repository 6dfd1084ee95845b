"""The secret shield (SPEC §5.10 `shield`): masks secrets and personal data in every request
body before a provider sees it. `presets.py` holds the built-in detectors, `engine.py` the
masking, `service.py` turns a tenant's settings into a compiled `Shield`."""
