-- KEYS[1] queue list; ARGV[1] element.
insert_sorted(KEYS[1], ARGV[1], false)
return 1
