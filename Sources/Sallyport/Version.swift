/// The version `sallyport --version` prints.
public let sallyportVersion = "0.1.0"
