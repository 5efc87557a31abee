"""Privacy: the retention job that erases personal data when its time is up, and the export of one
contact's data for a ``customers/data_request``."""
