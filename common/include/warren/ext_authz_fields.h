// The fields of Istio's MeshConfig.ExtensionProvider.envoyExtAuthzHttp that
// Warren knows: the controller validates a meshConfig against this list and
// the waypoint reads the provider with it, so the two cannot disagree.
#pragma once

namespace warren {

inline constexpr const char* kExtAuthzHttpFields[] = {"service",
                                                      "port",
                                                      "pathPrefix",
                                                      "timeout",
                                                      "failOpen",
                                                      "statusOnError",
                                                      "includeRequestHeadersInCheck",
                                                      "includeAdditionalHeadersInCheck",
                                                      "headersToUpstreamOnAllow",
                                                      "headersToDownstreamOnDeny",
                                                      "headersToDownstreamOnAllow",
                                                      "includeHeadersInCheck",
                                                      "includeRequestBodyInCheck",
                                                      "clearRouteCache"};

}  // namespace warren
