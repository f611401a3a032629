"""The engines a runner hands its jobs to (`executor` in the runner config): this machine, Slurm, Kubernetes."""
