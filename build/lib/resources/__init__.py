"""Resources: media storage and the Beam runner."""
