package sqlstore_test

import "time"

func storetestNow() time.Time { return time.Now() }

var testAuditKey = []byte("0123456789abcdef0123456789abcdef")
