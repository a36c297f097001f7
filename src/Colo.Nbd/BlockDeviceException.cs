namespace Colo.Nbd;

/// <summary>
/// Thrown by an <see cref="IBlockDevice"/> to fail one operation with a specific NBD error (the server sends
/// <see cref="Error"/> to the client). Any other <see cref="IOException"/> is sent as <see cref="NbdError.IO"/>, or as
/// <see cref="NbdError.NoSpc"/> when its errno is ENOSPC, EDQUOT or EFBIG.
/// </summary>
public sealed class BlockDeviceException : IOException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="error">The error to report; not <see cref="NbdError.None"/>.</param>
    /// <param name="message">Human-readable cause (logged, not sent).</param>
    public BlockDeviceException(NbdError error, string message)
        : base(message)
    {
        if (error == NbdError.None)
        {
            throw new ArgumentOutOfRangeException(nameof(error), error, "A block device error cannot be None.");
        }

        Error = error;
    }

    /// <summary>The NBD error the failed request is answered with.</summary>
    public NbdError Error { get; }
}
