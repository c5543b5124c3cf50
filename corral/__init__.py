"""corral: self-hostable Linux sandboxes on runc."""
