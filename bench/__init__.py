"""`tam bench`: the performance scenarios of issue 5, measured against the emulators."""
