"""The web dashboard at `/ui/`: server-rendered pages (Jinja2, autoescaped) for security teams
and operators, on top of the same services as the admin API. `session` (pure) signs the login
cookie and the CSRF tokens; `render` and `guard` are the request plumbing every page uses;
`routes` builds the sub-application; `pages/` holds one module per page."""
