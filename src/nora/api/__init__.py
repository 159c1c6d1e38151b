"""The Population/Generation API: pydantic models of spec and status, and the defaults they share."""
