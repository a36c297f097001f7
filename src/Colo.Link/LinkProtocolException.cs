using System.Diagnostics.CodeAnalysis;

namespace Colo.Link;

/// <summary>
/// The bytes received on the replication link do not follow the protocol (bad magic, unknown version or
/// type, oversized payload, undecodable payload). The link cannot be resynchronised and must be closed.
/// </summary>
public sealed class LinkProtocolException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="reason">Short description of the violation, e.g. "bad magic 0x1234".</param>
    public LinkProtocolException(string reason)
        : base("Replication link protocol violation: " + reason)
    {
        Reason = reason;
    }

    /// <summary>Creates the exception with the exception that exposed the violation.</summary>
    /// <param name="reason">Short description of the violation.</param>
    /// <param name="innerException">The underlying decoding error.</param>
    public LinkProtocolException(string reason, Exception innerException)
        : base("Replication link protocol violation: " + reason, innerException)
    {
        Reason = reason;
    }

    /// <summary>Short description of the violation, without the generic prefix of <see cref="Exception.Message"/>.</summary>
    public string Reason { get; }

    /// <summary>Throws a <see cref="LinkProtocolException"/>; kept out of line so parsers stay small.</summary>
    [DoesNotReturn]
    internal static void Throw(string reason) => throw new LinkProtocolException(reason);

    /// <summary>Throws a <see cref="LinkProtocolException"/> wrapping <paramref name="inner"/>.</summary>
    [DoesNotReturn]
    internal static void Throw(string reason, Exception inner) => throw new LinkProtocolException(reason, inner);
}
