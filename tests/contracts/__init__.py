"""Bad input everywhere (issue 8, item 4). A package (this file) so that the one stack its modules share is
``package``-scoped: started for the first contract test, stopped after the last one, never left running
beside another directory's stack on the run's vhost (where it would consume that stack's messages)."""
