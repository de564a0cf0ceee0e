"""Views, split by area: `pages` renders HTML, `api` answers JSON."""
