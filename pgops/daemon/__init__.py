"""`pgops daemon`: one long-running process that runs pgops' jobs on their schedules, safely next to other
daemons (advisory locks), observably (/metrics, /healthz, logs) and under systemd (notify, watchdog, SIGTERM)."""
