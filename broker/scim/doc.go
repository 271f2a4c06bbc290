// Package scim is the customer directory's surface: the SCIM 2.0 (RFC
// 7643, 7644) subset identity providers push (Okta, Entra ID) at
// /scim/v2/{tenant}: Users (create, get, list with filter=userName eq,
// replace, patch, delete), ServiceProviderConfig, ResourceTypes, Schemas,
// and SCIM's error format. It is hand-written rather than built on
// github.com/elimity-com/scim: that library is served only as a
// pseudo-version (no release to pin a security product to) and wants to
// own routing, schemas and errors, while the subset IdPs send is small.
// What a user's state means (grants ended or capped, admin addresses) is
// the core's.
package scim
