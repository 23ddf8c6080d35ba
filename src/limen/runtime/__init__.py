"""What `limen start` needs around the roles it runs: logging, the data dir's lock,
clear start-up failures (which address is taken, and by whom), reloading on SIGHUP."""
