namespace Colo.Nbd;

/// <summary>The error values an NBD reply may carry (proto.md "Error values"; errno numbers on Linux).</summary>
public enum NbdError : uint
{
    /// <summary>Success.</summary>
    None = 0,

    /// <summary>Operation not permitted (e.g. a write to a read-only export).</summary>
    Perm = 1,

    /// <summary>Input/output error (the device failed).</summary>
    IO = 5,

    /// <summary>Cannot allocate memory.</summary>
    NoMem = 12,

    /// <summary>Invalid argument: unknown command or flag, read past the end, oversized request.</summary>
    Inval = 22,

    /// <summary>No space left on device: a write past the end of the export, or the backing store is full.</summary>
    NoSpc = 28,

    /// <summary>Value too large.</summary>
    Overflow = 75,

    /// <summary>Operation not supported.</summary>
    NotSup = 95,

    /// <summary>The server is shutting down.</summary>
    Shutdown = 108,
}
