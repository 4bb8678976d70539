package api_test

import (
	"testing"

	"strand/eventlog/logtest"
	"strand/projector/store/storetest"
)

func logtestRestart(t *testing.T, dir string) *logtest.Server { return logtest.StartAt(t, dir) }

func newDBURL(t *testing.T) string { return storetest.NewURL(t) }
