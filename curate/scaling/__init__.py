"""The scaling and polarization study: a zoo the tool trains, discovery per size, fits."""
