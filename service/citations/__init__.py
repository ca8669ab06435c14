"""Citation formats: Better BibTeX keys, BibTeX/BibLaTeX, RIS, CSL-JSON, formatted references, notes."""
