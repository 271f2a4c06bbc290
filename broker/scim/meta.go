package scim

import (
	"net/http"

	"github.com/actas/actas/broker/core"
)

func (h *Handler) serviceProviderConfig(r *http.Request, _ *core.Directory) (int, any, error) {
	return http.StatusOK, map[string]any{
		"schemas":        []string{"urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"},
		"patch":          map[string]bool{"supported": true},
		"bulk":           map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
		"filter":         map[string]any{"supported": true, "maxResults": maxResults},
		"changePassword": map[string]bool{"supported": false},
		"sort":           map[string]bool{"supported": false},
		"etag":           map[string]bool{"supported": false},
		"authenticationSchemes": []map[string]any{{"type": "oauthbearertoken", "name": "Bearer token",
			"description": "A tenant admin creates it at POST /api/v1/tenants/{tenant}/scim-tokens", "primary": true}},
	}, nil
}

func (h *Handler) resourceTypes(r *http.Request, _ *core.Directory) (int, any, error) {
	return http.StatusOK, map[string]any{"schemas": []string{listSchema}, "totalResults": 1, "Resources": []map[string]any{{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:ResourceType"}, "id": "User", "name": "User",
		"endpoint": "/Users", "schema": userSchema,
	}}}, nil
}

func (h *Handler) schemas(r *http.Request, _ *core.Directory) (int, any, error) {
	attr := func(name, typ string, multi bool) map[string]any {
		return map[string]any{"name": name, "type": typ, "multiValued": multi, "required": name == "userName",
			"mutability": "readWrite", "returned": "default", "uniqueness": map[bool]string{true: "server", false: "none"}[name == "userName"]}
	}
	return http.StatusOK, map[string]any{"schemas": []string{listSchema}, "totalResults": 1, "Resources": []map[string]any{{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Schema"}, "id": userSchema, "name": "User",
		"attributes": []map[string]any{attr("userName", "string", false), attr("externalId", "string", false),
			attr("displayName", "string", false), attr("active", "boolean", false), attr("emails", "complex", true), attr("roles", "complex", true)},
	}}}, nil
}
