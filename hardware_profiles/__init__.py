"""The shipped hardware profiles (YAML). A package only so that a non-editable install (a wheel, a Dask
worker's environment) carries them next to the code; nothing here is Python."""
