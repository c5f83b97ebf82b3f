"""Product teams' verifiers, one package each (`releasegate new-verifier NAME` scaffolds one); each runs as
`python -m verifiers.<name>`. See docs/verifier-tutorial.md."""
