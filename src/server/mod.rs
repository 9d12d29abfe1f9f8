//! The HTTP listeners: public (webhooks) and admin (health, metrics, /admin).
