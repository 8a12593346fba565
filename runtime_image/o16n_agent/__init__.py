"""o16n's in-container agent: runs user code for the controller. Stdlib only, plus dill,
numpy and pandas where user values need them (imported lazily)."""
