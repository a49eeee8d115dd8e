import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// Every way a session ends. The access log's `end` and `rule` fields come from it alone, and so
/// does the reply code of an end that refuses a request.
enum SessionEnd: Sendable, Equatable {
    /// A client rule refused the client's address before any negotiation.
    case clientDenied(Policy.Reason)
    /// The negotiation ended it (bad bytes, no method, wrong password, unsupported command, ...).
    case negotiation(ServerNegotiation.Failure)
    /// The authenticator refused to check (the client is throttled, the checker is saturated).
    case authRefused
    /// The request was not complete within `timeouts.negotiation`.
    case negotiationTimeout
    /// A session limit (server-wide, per user, per client).
    case limit(SessionLimiter.Refusal)
    /// The policy refused the destination (or, for UDP, any destination for this subject).
    case denied(Policy.Reason)
    /// The request could not be carried out: the lookup or the connect failed, or ran out of time.
    case requestFailed(SOCKSReplyCode)
    /// A relayed TCP session ended.
    case relay(RelayEnd)
    /// A UDP association ended.
    case association(UDPRelayEnd)
    /// The client's connection failed (reset) before relaying.
    case clientError
    /// The server closed it (shutdown after the grace period).
    case closedByServer
    /// Closed through the admin listener (`DELETE /sessions/ID`).
    case closedByAdmin
    /// A connection to a PROXY protocol listener from an untrusted address, or without a valid header.
    case proxyHeaderRefused
    /// A PROXY protocol LOCAL connection: the balancer's own health check.
    case proxyLocal
    /// The user has used up a quota: refused at the request, or closed while running.
    case quota(Quota)
    /// The TLS handshake failed: no client certificate, an unknown CA, an expired one, not TLS at all.
    case tlsFailed
    /// The client certificate was verified but names no usable user, or is revoked.
    case certificateRefused

    /// The `end` field of the access log.
    var logName: String {
        switch self {
        case .clientDenied: return "client_denied"
        case .negotiation(let failure):
            switch failure {
            case .protocolError: return "protocol_error"
            case .noAcceptableMethod: return "no_acceptable_method"
            case .authenticationFailed: return "auth_failed"
            case .commandNotSupported: return "command_not_supported"
            case .requestFailed: return "request_failed"
            case .earlyDataLimitExceeded: return "early_data_limit"
            case .clientClosed: return "client_closed"
            }
        case .authRefused: return "auth_refused"
        case .negotiationTimeout: return "negotiation_timeout"
        case .limit(let refusal): return refusal.logName
        case .denied: return "denied"
        case .requestFailed: return "request_failed"
        case .relay(let end): return end.rawValue
        case .association(let end): return end.rawValue
        case .clientError: return "client_error"
        case .closedByServer: return "closed_by_server"
        case .closedByAdmin: return "closed_by_admin"
        case .proxyHeaderRefused: return "proxy_refused"
        case .proxyLocal: return "proxy_local"
        case .quota: return "quota"
        case .tlsFailed: return "tls_failed"
        case .certificateRefused: return "certificate_refused"
        }
    }

    /// The reply a refused or failed request gets for this end; nil for ends that come before a
    /// request or after its reply.
    var reply: SOCKSReplyCode? {
        switch self {
        // The server-wide cap is the server's own state (0x01), worth retrying later; per-user and
        // per-client limits, like the rules and quotas, are policy (0x02).
        case .limit(.server): return .generalFailure
        case .limit, .denied, .quota: return .notAllowed
        case .requestFailed(let code): return code
        default: return nil
        }
    }

    /// The rule that decided, when one did.
    var rule: Policy.Reason? {
        switch self {
        case .clientDenied(let reason), .denied(let reason): return reason
        default: return nil
        }
    }
}
