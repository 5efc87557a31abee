"""Notification jobs as operators see them: replay now, the jobs API of the admin SPA later."""
