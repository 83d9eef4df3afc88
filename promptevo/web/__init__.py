"""The local web page (`promptevo serve`): `app` (routes, token, headers; Starlette) and `pages`
(what each page shows, read from the repository), with autoescaped `templates/` and `static/`."""
