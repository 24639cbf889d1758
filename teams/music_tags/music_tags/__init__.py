"""The music tags team's code location, built on the media team's outputs (README "Two teams")."""
