using System.Diagnostics.CodeAnalysis;

namespace Colo.Nbd.Internal;

/// <summary>The peer broke the protocol in a way that ends the connection (bad magic, bad flags, absurd length).</summary>
internal sealed class NbdProtocolException(string message) : Exception(message)
{
    [DoesNotReturn]
    public static void Throw(string message) => throw new NbdProtocolException(message);
}
