"""Where and when members run: the one owner of Ray scheduling (`pool.MemberPool`, with its pure
restart decisions and the hand-off a restarted member resumes from), the Ray session (`session`),
resource decisions (`placement`) and the autoscaler's view (`autoscaling`); the decisions are pure
functions tested without Ray."""
