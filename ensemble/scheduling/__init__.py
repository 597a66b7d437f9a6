"""Where and when members run: the one owner of Ray scheduling (`pool.MemberPool`, with its pure
restart decisions and the hand-off a restarted member resumes from), the actors it keeps warm for the
next run in a session that outlives a run (`warm_actors`), the Ray session (`session`),
resource decisions (`placement`) and the autoscaler's view (`autoscaling`); the decisions are pure
functions tested without Ray."""
