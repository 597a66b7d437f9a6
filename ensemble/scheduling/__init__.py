"""Where and when members run: the one owner of Ray scheduling (`pool.MemberPool`), the Ray
session (`session`), resource decisions (`placement`) and failure decisions (`recovery`), the
last two pure functions tested without Ray."""
