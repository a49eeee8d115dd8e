import FoundationEssentials
import SOCKSProtocol
import SallyportPolicy

/// A proxy auto-config file (the `FindProxyForURL` JavaScript browsers read): the names, domains
/// and IPv4 blocks listed go direct, everything else through this SOCKS5 server (`SOCKS5 host:port`,
/// with no SOCKS4 fallback).
enum PACFile {
    static func make(proxyHost: String, proxyPort: Int, direct: [String]) -> String {
        let proxy = proxyHost.contains(":") ? "[\(proxyHost)]:\(proxyPort)" : "\(proxyHost):\(proxyPort)"
        var lines = ["function FindProxyForURL(url, host) {", "  var ipv4 = /^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$/;"]
        for entry in direct {
            if let block = CIDR(entry), case .v4(let network) = block.network {
                let mask = SOCKSIPv4Address(block.prefixLength == 0 ? 0 : UInt32.max << UInt32(32 - block.prefixLength))
                // Only for addresses written as such: a name is never looked up by the browser
                // (that would tell the local resolver what the user visits).
                lines.append("  if (ipv4.test(host) && isInNet(host, \"\(network)\", \"\(mask)\")) return \"DIRECT\";")
            } else if entry.hasPrefix(".") {
                lines.append("  if (dnsDomainIs(host, \"\(javaScript(entry))\") || host == \"\(javaScript(String(entry.dropFirst())))\") return \"DIRECT\";")
            } else {
                lines.append("  if (host == \"\(javaScript(entry))\") return \"DIRECT\";")
            }
        }
        // SOCKS5 only: a browser that falls back to `SOCKS` (version 4) resolves names itself,
        // telling the local resolver every site and leaving the rules only an address to judge.
        lines.append("  return \"SOCKS5 \(proxy)\";")
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    /// A string safe inside JavaScript double quotes.
    private static func javaScript(_ text: String) -> String {
        var result = ""
        for character in text.unicodeScalars {
            switch character {
            case "\"", "\\": result += "\\\(character)"
            case _ where character.value < 0x20 || character.value > 0x7E:
                // JavaScript's \uXXXX is UTF-16: a character past U+FFFF takes two of them.
                for unit in String(character).utf16 {
                    let hex = String(unit, radix: 16)
                    result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                }
            default: result.unicodeScalars.append(character)
            }
        }
        return result
    }
}
