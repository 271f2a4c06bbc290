// Package examples holds the sample files shipped with actas; the dev
// setup and the demo run on the sample policy.
package examples

import _ "embed"

// Policy is examples/policy.yaml.
//
//go:embed policy.yaml
var Policy []byte
