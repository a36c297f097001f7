using System.Diagnostics.CodeAnalysis;

namespace Colo.Link;

/// <summary>
/// An operation was attempted on, or was interrupted by, a closed replication link. <see cref="Reason"/> is
/// the link's <see cref="LinkConnection.CloseReason"/> (the first reason the link was closed for).
/// </summary>
public sealed class LinkClosedException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="reason">Why the link is closed.</param>
    public LinkClosedException(string reason)
        : base("Replication link closed: " + reason)
    {
        Reason = reason;
    }

    /// <summary>Creates the exception with the error that closed the link.</summary>
    /// <param name="reason">Why the link is closed.</param>
    /// <param name="innerException">The socket or I/O error observed by the failed operation.</param>
    public LinkClosedException(string reason, Exception? innerException)
        : base("Replication link closed: " + reason, innerException)
    {
        Reason = reason;
    }

    /// <summary>Why the link is closed (first recorded reason).</summary>
    public string Reason { get; }

    [DoesNotReturn]
    internal static void Throw(string reason, Exception? inner = null) => throw new LinkClosedException(reason, inner);
}
