"""The bundled recipes (`*.toml`) and bench configs (`bench/*.toml`), shipped as package data so
a wheel install finds them by name (`curate recipes ls`)."""
