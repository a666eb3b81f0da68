"""Hidden checks: instructor side only; may compare against course_lib.reference."""
