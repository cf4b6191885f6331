"""`scarmon ui`: refinement in the browser (`server`)."""
