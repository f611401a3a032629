"""The runner agent: a separate program that talks to the Corral server over HTTP only."""
