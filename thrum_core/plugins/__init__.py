"""Plugin loading and registration (pluggy facade, entry-point loader, registrars)."""
