using System.Globalization;

namespace Colo.Image;

/// <summary>
/// Builds the kernel command line the guest image expects. The guest's <c>/init</c> reads
/// <c>colo.ip=A.B.C.D/NN</c> (and optional <c>colo.gw=A.B.C.D</c>) and configures <c>eth0</c> with it.
/// IPv6 is disabled in the guest with <c>ipv6.disable=1</c> (so the guest emits no IPv6 neighbour
/// discovery / router solicitations that would need comparing); <c>panic=-1</c> reboots at once
/// on a kernel panic; the console is the first serial port.
/// </summary>
public static class GuestKernelCmdline
{
    /// <summary>The fixed part of the command line, without the <c>colo.*</c> parameters.</summary>
    public const string Base = "console=ttyS0 ipv6.disable=1 panic=-1 quiet";

    /// <summary>
    /// Returns <c>"console=ttyS0 ipv6.disable=1 panic=-1 quiet colo.ip=IPCIDR"</c>.
    /// </summary>
    /// <param name="ipCidr">The guest's IPv4 address with prefix length, e.g. <c>10.0.2.15/24</c>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="ipCidr"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="ipCidr"/> is not an IPv4 address with a prefix length 0..32.</exception>
    public static string Build(string ipCidr) => Build(ipCidr, null);

    /// <summary>
    /// Returns <c>"console=ttyS0 ipv6.disable=1 panic=-1 quiet colo.ip=IPCIDR [colo.gw=GATEWAY]"</c>.
    /// </summary>
    /// <param name="ipCidr">The guest's IPv4 address with prefix length, e.g. <c>10.0.0.2/24</c>.</param>
    /// <param name="gateway">Optional IPv4 default gateway; null or empty for none.</param>
    /// <exception cref="ArgumentNullException"><paramref name="ipCidr"/> is null.</exception>
    /// <exception cref="ArgumentException">An address is malformed or the prefix length is not 0..32.</exception>
    public static string Build(string ipCidr, string? gateway)
    {
        ArgumentNullException.ThrowIfNull(ipCidr);
        ValidateCidr(ipCidr);
        var s = $"{Base} colo.ip={ipCidr}";
        if (!string.IsNullOrEmpty(gateway))
        {
            ValidateIPv4(gateway, nameof(gateway));
            s += $" colo.gw={gateway}";
        }
        return s;
    }

    private static void ValidateCidr(string ipCidr)
    {
        var slash = ipCidr.IndexOf('/');
        if (slash <= 0 || slash == ipCidr.Length - 1)
            throw new ArgumentException($"expected A.B.C.D/NN, got '{ipCidr}'", nameof(ipCidr));
        ValidateIPv4(ipCidr[..slash], nameof(ipCidr));
        var prefix = ipCidr[(slash + 1)..];
        if (prefix.Length > 2 || !prefix.All(char.IsAsciiDigit)
            || !int.TryParse(prefix, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n > 32)
            throw new ArgumentException($"prefix length must be 0..32, got '{prefix}'", nameof(ipCidr));
    }

    private static void ValidateIPv4(string s, string param)
    {
        // IPAddress.TryParse accepts shorthand ("10.1") and octal/hex parts; require four plain
        // decimal parts 0..255 without leading zeros.
        var parts = s.Split('.');
        if (parts.Length != 4 || parts.Any(p => p.Length is 0 or > 3 || !p.All(char.IsAsciiDigit)
                || (p.Length > 1 && p[0] == '0') || int.Parse(p, CultureInfo.InvariantCulture) > 255))
            throw new ArgumentException($"'{s}' is not a dotted-quad IPv4 address", param);
    }
}
