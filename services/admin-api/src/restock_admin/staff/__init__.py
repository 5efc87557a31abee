"""Who may use the admin API: Shopify session tokens (``session_token``), roles (``roles``), the grants
(``repository``) and the guard that applies them to every ``/admin/api`` route (``guard``)."""
