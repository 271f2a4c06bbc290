package sqlstore_test

import "time"

func storetestNow() time.Time { return time.Now() }
