"""Reports of finished runs: `html` (one self-contained page), `plots` (SVG) and `export` (JSON)."""
