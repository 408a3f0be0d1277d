"""The web kit both apps' pages are built from: list filters, pagination, safe redirects, the list-page
skeleton, and the template partials and tags every page shares. No domain logic lives here."""
